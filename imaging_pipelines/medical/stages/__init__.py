"""Medical pipeline stages as plain functions over partition stores: read upstream store -> core -> write atomically -> result."""
