"""Usage analytics and the analytics report."""
