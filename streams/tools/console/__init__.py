"""`fusion console CC`: one country's operations console, a page served with the alerts of
`alerts.<cc>` read back over a span and then followed live."""
