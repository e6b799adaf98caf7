"""Reliability suite (issue 11, point 4): ``python -m tests.reliability``; see __main__.py."""
