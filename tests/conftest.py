"""Shared by all tests. Its presence puts tests/ on sys.path (pytest's default import mode), so that test
modules can import the input builders in tests/fixtures/."""
