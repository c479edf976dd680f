"""One module per serving framework. Each defines `<Name>Config` and `<Name>Adapter`."""
