"""Point-in-time features of declaration items: the catalog, valuation statistics, entity history
profiles, tax-customs checks, and the builder shared by training and daily scoring."""
