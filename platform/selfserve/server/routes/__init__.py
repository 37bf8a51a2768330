"""One module per noun; each is thin and calls the policy/service layer."""
