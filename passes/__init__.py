"""Graph -> Graph passes: autodiff (VJP table), simplification."""
from .autodiff import grad, value_and_grad
from .simplify import cse, dce, drop_identities, fold_constants, simplify
from .vjp_rules import VJP

__all__ = ["grad", "value_and_grad", "simplify", "dce", "cse", "fold_constants", "drop_identities", "VJP"]
