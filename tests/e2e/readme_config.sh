# README's configuration table is exactly `moed config --markdown` (the key table in
# config/keys.c), so the documentation cannot drift from the code.
source "$MOED_SRC/tests/common/e2e_lib.sh"
"$MOED" config --markdown > "$WORK/generated.md"
sed -n '/<!-- config-table:begin -->/,/<!-- config-table:end -->/p' "$MOED_SRC/README.md" |
  sed '1d;$d' > "$WORK/readme.md"
if cmp -s "$WORK/generated.md" "$WORK/readme.md"; then
  pass "README config table matches moed config --markdown"
else
  fail "README config table is out of date; regenerate it with scripts/update-readme-config"
  diff "$WORK/readme.md" "$WORK/generated.md" | head -20
fi
check "every key has a row" [ "$(grep -c '^| `' "$WORK/generated.md")" -ge 30 ]
finish
