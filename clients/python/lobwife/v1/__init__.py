"""Generated from proto/lobwife/v1 by scripts/gen_protos.py. Do not edit."""
