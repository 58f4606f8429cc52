# Shared by round.sh, cls_round.sh and both.sh (sourced, not run): what every call on the lent machine does first.

# The kit's wheels (pack.sh) into /tmp/site for the machine's Python, and the checkout on the import path.
# Installed once per machine: later calls, and the two scripts both.sh starts at once, find the same
# wheels recorded there (two pip processes writing one folder together could leave it broken).
use_kit_python() {
    if compgen -G "$KIT/wheels/*.whl" > /dev/null; then
        local site=${KIT_SITE:-/tmp/site} wheels
        wheels=$(cd "$KIT/wheels" && sha256sum -- *.whl)
        if [[ "$(cat "$site/.kit_wheels" 2>/dev/null)" != "$wheels" ]]; then
            "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$site" "$KIT"/wheels/*.whl
            echo "$wheels" > "$site/.kit_wheels"
        fi
        export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    else
        export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
}
