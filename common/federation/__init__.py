"""What both Flower apps share, without importing Flower: the run settings, the wire protocol
(message layouts, weight encoding, metric keys) and what a site does in one round."""
