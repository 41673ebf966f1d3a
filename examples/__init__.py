"""Files the docs include and the tests run: a payment, a producer, a first rule."""
