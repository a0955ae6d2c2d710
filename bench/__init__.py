"""Benchmark and leaderboard harness for diffusion-based medical image analysis."""

__version__ = "0.1.0"
