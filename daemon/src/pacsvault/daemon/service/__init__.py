"""Thin gRPC servicers: validate, translate, one domain call, map errors."""
