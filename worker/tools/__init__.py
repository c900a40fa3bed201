"""Tools run by hand: the demo and its sample maker, benchmarks, HC18 conversion, growth charts."""
