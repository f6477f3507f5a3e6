"""C support library linked into every CPU artifact (threadpool.c); a package so its sources ship as package data."""
