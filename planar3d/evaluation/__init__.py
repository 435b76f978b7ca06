"""Metrics, lesions, statistics, the paper's reference figures, reports and figures."""
