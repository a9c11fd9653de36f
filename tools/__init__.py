"""What the tests and the benchmarks share, and the developers' scripts: none of it is
shipped (the wheel holds ``ringsum`` alone). ``processes.py`` starts real servers on free
ports, ``proxies.py`` runs nginx and Caddy with the shipped ``deploy/`` configs."""
