"""Raw datasets: the phantom generator, reading and verifying, preprocessing, splits."""
