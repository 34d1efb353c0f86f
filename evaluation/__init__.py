"""How good are samples? Brightness metrics (the paper's claim), the shapes yardstick, FID."""
