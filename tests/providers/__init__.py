"""Tests of the quote providers against loopback servers speaking the real wire formats."""
