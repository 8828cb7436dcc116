"""From features to answers: labels against a vocabulary, ensembles, instances and text queries."""
