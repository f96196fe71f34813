"""Graph -> Graph passes: autodiff (VJP table), simplification, fusion, the default pipeline
(optimize) and the pass manager that runs them."""
from .autodiff import grad, value_and_grad
from .fusion import fuse, unfuse
from .manager import PassError, PassManager, print_after
from .optimize import optimize
from .simplify import SIMPLIFY, canonicalize, cse, dce, drop_identities, fold_constants, simplify
from .vjp_rules import VJP

__all__ = ["grad", "value_and_grad", "PassManager", "PassError", "print_after", "SIMPLIFY", "simplify",
           "canonicalize", "dce", "cse", "fold_constants", "drop_identities", "VJP",
           "fuse", "unfuse", "optimize"]
