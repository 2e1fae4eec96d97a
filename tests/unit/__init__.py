"""Unit tests of the pure library modules: no I/O beyond tmp_path, no gRPC, no database."""
