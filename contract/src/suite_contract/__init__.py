"""suite_contract: the deploy contract between the services and what builds, deploys and runs
them (the service specs, the AWS resource names, the ECR rules); no service image carries it."""
