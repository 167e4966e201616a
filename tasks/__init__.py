"""The tutorial's three tasks built on tinycnn's public API: catdog, plates-box, plates-seg."""
