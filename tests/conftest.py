"""Suite-wide settings: every pass manager verifies the IR after every pass in tests."""
import os

os.environ["TAPEIR_VERIFY_PASSES"] = "1"
