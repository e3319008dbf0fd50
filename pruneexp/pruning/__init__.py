"""Pruning: masks, criteria (scores), the selector (scores -> masks)."""
