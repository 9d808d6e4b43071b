"""Remote-sensing pipeline stages as plain functions over tile stores: read upstream store -> core -> write atomically -> result."""
