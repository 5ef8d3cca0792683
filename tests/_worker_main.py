"""The main module a pytest-xdist worker claims (tests/conftest.py): empty on purpose.

multiprocessing's spawn start method re-runs the parent's main module file in each child; a worker's real
main module has no file, and pyspark.sql.connect (imported by Great Expectations) exits such a process.
"""
