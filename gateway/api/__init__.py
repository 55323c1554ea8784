"""The HTTP API: routes, the data plane they share, request and answer shapes, middleware and
the page. The only room that uses all the others."""
