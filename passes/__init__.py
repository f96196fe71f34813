"""Graph -> Graph passes (autodiff, fusion, simplification) live here."""
