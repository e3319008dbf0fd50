from pruneexp.cli import main

main()
