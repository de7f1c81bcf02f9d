"""What operators look at: the aggregates and checks behind the console's pages."""
