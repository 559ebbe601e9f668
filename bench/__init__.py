"""Benchmarks: each module prints figures and never fails the test run."""
