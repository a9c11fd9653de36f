"""HTTP/1.1 itself, with no Flask: the edge that reads each whole request with a
deadline and calls the WSGI app, the request reader, the problem document both sides
write, the access log."""
