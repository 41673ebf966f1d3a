"""AWS Lambda functions of the fraud-detection pipeline (bundled by ``make lambda-zip``)."""
