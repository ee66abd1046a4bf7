"""One package per recipe: config schema + build data → build model → fit → evaluate → save.
Recipes never import each other."""
