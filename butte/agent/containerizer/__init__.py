"""Containerizers: how an executor process is started, watched and destroyed (`posix`)."""
