"""Conformance suites shipped with the package, as ``optuna/testing/`` does.

A new searcher (or scheduler, or journal backend) is correct when it passes the
same checks as the built-in ones. Import the module of the suite you need, for
example :mod:`toolkit.testing.searchers`; this package imports nothing itself.
"""
