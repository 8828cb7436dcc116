"""2D teachers: vision-language models (and their stand-ins) as per-pixel feature sources."""
