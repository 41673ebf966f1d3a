#!/bin/sh
# Runs one of the stack's one-shot admin tasks (modules/workers) and waits for it: prints its
# log, exits 0 when its container exited 0, else 1 naming the exit code or why ECS stopped it.
#
# `terraform apply` runs the create-topics task with it (terraform_data.topics) before it
# creates or updates the workers' service; it needs the AWS CLI v2 and the credentials the
# apply uses (ecs:RunTask, iam:PassRole on the task's roles, ecs:DescribeTasks, logs:*Log*).
#
#   REGION CLUSTER TASK_DEFINITION CONTAINER SUBNETS (a,b,c) SECURITY_GROUP LOG_GROUP
#   OVERRIDES (optional: run-task's --overrides JSON)
set -eu

: "${REGION:?}" "${CLUSTER:?}" "${TASK_DEFINITION:?}" "${CONTAINER:?}"
: "${SUBNETS:?}" "${SECURITY_GROUP:?}" "${LOG_GROUP:?}"

network="awsvpcConfiguration={subnets=[$SUBNETS],securityGroups=[$SECURITY_GROUP],assignPublicIp=DISABLED}"
if [ -n "${OVERRIDES:-}" ]; then
    set -- --overrides "$OVERRIDES"
else
    set --
fi

started=$(aws ecs run-task --region "$REGION" --cluster "$CLUSTER" --launch-type FARGATE \
    --task-definition "$TASK_DEFINITION" --network-configuration "$network" "$@" \
    --query '[tasks[0].taskArn, failures[0].reason]' --output text)
task=$(printf '%s\n' "$started" | cut -f1)
case "$task" in
    arn:*) ;;
    *)
        echo "$CONTAINER: ECS started no task: $(printf '%s\n' "$started" | cut -f2-)" >&2
        exit 1
        ;;
esac
echo "$CONTAINER: started $task; waiting for it to stop (up to 10 minutes)"

if ! aws ecs wait tasks-stopped --region "$REGION" --cluster "$CLUSTER" --tasks "$task"; then
    echo "$CONTAINER: $task did not stop within 10 minutes; see the ECS console" >&2
    exit 1
fi

stopped=$(aws ecs describe-tasks --region "$REGION" --cluster "$CLUSTER" --tasks "$task" \
    --query "tasks[0].[containers[?name=='$CONTAINER'].exitCode | [0], stoppedReason]" \
    --output text)
code=$(printf '%s\n' "$stopped" | cut -f1)
reason=$(printf '%s\n' "$stopped" | cut -f2-)

# The container's log: admin/<container>/<task id> in the workers' group.
aws logs tail "$LOG_GROUP" --region "$REGION" --since 1h --format short \
    --log-stream-names "admin/$CONTAINER/${task##*/}" || true

if [ "$code" != 0 ]; then
    echo "$CONTAINER: exit code $code ($reason)" >&2
    exit 1
fi
echo "$CONTAINER: done"
