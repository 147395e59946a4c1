// ProcOS Scilab runner. The worker hands it:
//   /in/inputs.sce   one assignment per input, generated and checked on the worker's side
//                    (Scilab's fromJSON crashes on bad JSON, so JSON never reaches Scilab);
//   /in/script.sce   the task's script;
//   /in/outputs.txt  the names of the variables to hand back, one per line.
// It writes /out/output.json with its own JSON writer (toJSON writes NaN/Inf bare and escapes
// only the first quote of a string). Exit codes: 0 done, 3 BPMN error, 1 error; a script's own
// exit(n) gives n.
//
// In a script: procos_bpmn_error(code, message) ends the task with a BPMN error.

function procos_bpmn_error(code, message)
    mputl("{""errorCode"":" + procos_json_string(string(code)) + ",""errorMessage"":" + procos_json_string(string(message)) + "}", "/out/output.json");
    exit(3);
endfunction

function s = procos_json_string(t)
    t = strsubst(t, "\", "\\");
    t = strsubst(t, """", "\""");
    t = strsubst(t, ascii(10), "\n");
    t = strsubst(t, ascii(13), "\r");
    t = strsubst(t, ascii(9), "\t");
    for k = [1:8, 11, 12, 14:31]
        t = strsubst(t, ascii(k), msprintf("\\u%04x", k));
    end
    s = """" + t + """";
endfunction

// The JSON texts of one row of values.
function items = procos_json_items(name, row)
    select type(row)
    case 1 then
        if ~isreal(row) then
            error(msprintf("output %s is complex; outputs may be real numbers, booleans or strings", name));
        end
        if or(isnan(row)) | or(isinf(row)) then
            error(msprintf("output %s holds NaN or Inf, which a process variable cannot hold", name));
        end
        items = msprintf("%.17g\n", row(:));
    case 4 then
        items = emptystr(size(row, "*"), 1);
        items(row(:)) = "true";
        items(~row(:)) = "false";
    case 10 then
        items = emptystr(size(row, "*"), 1);
        for k = 1:size(row, "*")
            items(k) = procos_json_string(row(k));
        end
    else
        error(msprintf("output %s is of type %s; outputs may be real numbers, booleans or strings (scalars, vectors, matrices)", name, typeof(row)));
    end
endfunction

// A scalar as itself, a vector as an array, a matrix as an array of rows.
function s = procos_json_value(name, v)
    [m, n] = size(v);
    if m * n == 0 then
        s = "null";
    elseif m * n == 1 then
        s = procos_json_items(name, v);
    elseif m == 1 | n == 1 then
        s = "[" + strcat(procos_json_items(name, matrix(v, 1, -1)), ",") + "]";
    else
        rows = emptystr(m, 1);
        for i = 1:m
            rows(i) = "[" + strcat(procos_json_items(name, v(i, :)), ",") + "]";
        end
        s = "[" + strcat(rows, ",") + "]";
    end
endfunction

// Reports the last error, with its line in the script when `with_line` (the runner's own lines
// mean nothing to the script's author), and exits 1.
function procos_fail(what, with_line)
    [procos_message, procos_n, procos_line, procos_func] = lasterror();
    procos_message = strcat(procos_message, " ");
    if with_line & procos_line > 0 then
        mfprintf(0, "%s, line %d: %s\n", what, procos_line, procos_message);
    else
        mfprintf(0, "%s: %s\n", what, procos_message);
    end
    exit(1);
endfunction

if exec("/in/inputs.sce", "errcatch", -1) <> 0 then
    procos_fail("the inputs", %f);
end
if exec("/in/script.sce", "errcatch", -1) <> 0 then
    procos_fail("the script", %t);
end
procos_names = mgetl("/in/outputs.txt");
procos_fields = [];
for procos_k = 1:size(procos_names, "*")
    procos_name = stripblanks(procos_names(procos_k));
    if procos_name == "" then
        continue;
    end
    if ~exists(procos_name) then
        mfprintf(0, "the script did not set the output %s\n", procos_name);
        exit(1);
    end
    if execstr("procos_text = procos_json_value(procos_name, " + procos_name + ");", "errcatch") <> 0 then
        procos_fail("the outputs", %f);
    end
    procos_fields = [procos_fields; procos_json_string(procos_name) + ":" + procos_text];
end
mputl("{" + strcat(procos_fields, ",") + "}", "/out/output.json");
exit(0);
