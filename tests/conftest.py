"""Shared fixtures: composing run configs the way `pruneexp run` does, in a temporary results dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from pruneexp.cli import CONF_DIR
from pruneexp.conf_store import register_configs

REPO = Path(__file__).resolve().parent.parent
# Tiny but real: digits, two short phases; a full run takes about a second.
TINY = ["train.duration=10ep", "schedule.finetune.duration=5ep", "quiet=true"]


@pytest.fixture
def make_cfg(tmp_path):
    register_configs()

    def make(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=[f"results_dir={tmp_path / 'results'}", *overrides])

    return make


@pytest.fixture
def convbn_case():
    """(ConvBN, channel masks): seeded, BatchNorm statistics randomised (tests/channel_cases.py)."""
    from channel_cases import convbn_case

    return convbn_case()


@pytest.fixture
def resnet20_case():
    """(ResNet-20 on 8 x 8 inputs, block-internal and residual channel masks) (tests/channel_cases.py)."""
    from channel_cases import resnet20_case

    return resnet20_case()


@pytest.fixture
def cli(tmp_path):
    """Run `python -m pruneexp ARGS` in tmp_path; return the CompletedProcess."""

    def call(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "PRUNEEXP_RESULTS": str(tmp_path / "results"), "PRUNEEXP_CACHE": str(tmp_path / "cache")}
        return subprocess.run([sys.executable, "-m", "pruneexp", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=timeout)

    return call
