//! A static HTTP server for channel directories, with Range and ETag / If-None-Match (development and demos).
