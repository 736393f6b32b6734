#!/usr/bin/env bash
# The steps of the CI recipes (github-workflow.yml, gitlab-ci.yml), one subcommand each, so
# GitHub Actions, GitLab CI and the test that proves them all run the same commands.
#
#   nexus-ci.sh register ARTIFACT MODEL     store ARTIFACT as the next version of MODEL;
#                                           prints version=vN (for $GITHUB_OUTPUT)
#   nexus-ci.sh gate MODEL VERSION -- CMD…  nexus verify, then CMD (your evaluation); if
#                                           either fails the version is rejected, with the
#                                           failure's output as the reason, and this fails
#   nexus-ci.sh release MODEL VERSION       approve (the protected environment's reviewers
#                                           have approved the job) and promote to production
#   nexus-ci.sh commit MESSAGE              commit .nexus_meta.json (and the .gitignore and
#                                           .gitattributes lines nexus adds) and push it
set -euo pipefail

usage() { sed -n '5,14p' "$0" >&2; exit 2; }

command="${1:-}"; shift || true
case "$command" in
  register)
    [ $# -eq 2 ] || usage
    nexus store "$1" "$2" --message "CI ${CI_PIPELINE_ID:-${GITHUB_RUN_ID:-local}}" --allow-dirty >&2
    version="v$(nexus show latest --model-name "$2" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')"
    echo "version=${version}"
    ;;
  gate)
    [ $# -ge 3 ] && [ "$3" = "--" ] || usage
    model="$1" version="$2"; shift 3
    log="$(mktemp)"
    if nexus verify "$version" --model-name "$model" >"$log" 2>&1 && "$@" >>"$log" 2>&1; then
      cat "$log"
      echo "gate passed: ${model} ${version}"
    else
      cat "$log" >&2
      reason="gate failed: $(tail -n 5 "$log" | tr '\n' ' ' | cut -c1-500)"
      nexus reject "$version" "$model" --reason "$reason"
      echo "${model} ${version} rejected" >&2
      exit 1
    fi
    ;;
  release)
    [ $# -eq 2 ] || usage
    nexus approve "$2" "$1"
    nexus promote "$2" "$1" --stage production
    ;;
  commit)
    [ $# -eq 1 ] || usage
    own=()
    for file in .nexus_meta.json .gitignore .gitattributes; do [ -e "$file" ] && own+=("$file"); done
    git add -- "${own[@]}"
    if git diff --cached --quiet -- "${own[@]}"; then
      echo "nothing to commit"
    else
      git -c user.name="${GIT_AUTHOR_NAME:-nexus-ci}" -c user.email="${GIT_AUTHOR_EMAIL:-ci@nexus}" \
        commit -q -m "$1" -- "${own[@]}"
      if git remote get-url origin >/dev/null 2>&1; then
        git pull -q --no-rebase origin "$(git rev-parse --abbrev-ref HEAD)"  # merge driver: nexus init
        git push -q origin HEAD
      fi
    fi
    ;;
  *) usage ;;
esac
