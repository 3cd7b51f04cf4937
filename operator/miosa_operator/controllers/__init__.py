"""Controllers: the decisions and steps behind each kopf handler, framework-free."""
