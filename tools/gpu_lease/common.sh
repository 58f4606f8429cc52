# Shared by round.sh and cls_round.sh (sourced, not run): what every call on the lent machine does first.

# The kit's wheels (pack.sh) into /tmp/site for the machine's Python, and the checkout on the import path.
use_kit_python() {
    if compgen -G "$KIT/wheels/*.whl" > /dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site "$KIT"/wheels/*.whl
        export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    else
        export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
}
