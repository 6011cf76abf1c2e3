#!/bin/sh
# Arguments that start with `-` are curl's; anything else is a command to run.
if [ "${1#-}" != "$1" ]; then
  set -- curl "$@"
fi
exec "$@"
