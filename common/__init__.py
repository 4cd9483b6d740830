"""Code shared by the gateway (transformer) and the predictors."""
