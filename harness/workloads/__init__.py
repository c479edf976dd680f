"""Workload families: one module each (harness/workloads/base.py has the contract)."""
