"""Evaluation: metrics, the K-shot protocol, dataset readers and reports."""
