"""Mail stores: the interface (`base`) and its backends."""
