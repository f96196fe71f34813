"""Graph -> Graph passes: autodiff (VJP table), simplification, and the pass manager that runs them."""
from .autodiff import grad, value_and_grad
from .manager import PassError, PassManager, print_after
from .simplify import SIMPLIFY, canonicalize, cse, dce, drop_identities, fold_constants, simplify
from .vjp_rules import VJP

__all__ = ["grad", "value_and_grad", "PassManager", "PassError", "print_after", "SIMPLIFY", "simplify",
           "canonicalize", "dce", "cse", "fold_constants", "drop_identities", "VJP"]
