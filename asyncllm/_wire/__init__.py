"""Wire formats shared by several backends."""
