// Runs several of Kafka's command-line tools in one JVM, one after the
// other, so that the test beside this file pays for one JVM start. Run as a
// source file: java -cp 'LIBS/*' Tools.java < commands
//
// Each line of standard input is one command: the tool's main class, then
// its arguments, separated by tabs. For each, Tools prints to standard
// output
//   --- begin N
//   what the tool printed (its System.out and System.err)
//   --- end N exit CODE
// CODE is the first code the tool passed to Exit.exit, else 0 if it
// returned and -1 if it threw. Exit.exit only records the code and
// returns: TopicCommand calls it in a finally block inside a catch of
// Throwable, so an exit that threw would be reported as a failure.
import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.lang.reflect.InvocationTargetException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

import org.apache.kafka.common.utils.Exit;

public class Tools {
    static volatile Integer exited;

    public static void main(String[] args) throws Exception {
        PrintStream out = System.out, err = System.err;
        Exit.Procedure record = (code, msg) -> {
            if (exited == null) {
                exited = code;
            }
        };
        Exit.setExitProcedure(record);
        Exit.setHaltProcedure(record);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        int n = 0;
        for (String line; (line = in.readLine()) != null; ) {
            if (line.isBlank()) {
                continue;
            }
            String[] f = line.split("\t");
            ByteArrayOutputStream buf = new ByteArrayOutputStream();
            PrintStream cap = new PrintStream(buf, true, StandardCharsets.UTF_8);
            System.setOut(cap);
            System.setErr(cap);
            exited = null;
            int code = 0;
            try {
                Class.forName(f[0]).getMethod("main", String[].class)
                    .invoke(null, (Object) Arrays.copyOfRange(f, 1, f.length));
            } catch (InvocationTargetException e) {
                e.getCause().printStackTrace(cap);
                code = -1;
            } catch (ReflectiveOperationException e) {
                e.printStackTrace(cap);
                code = -1;
            } finally {
                if (exited != null) {
                    code = exited;
                }
                cap.flush();
                System.setOut(out);
                System.setErr(err);
            }
            out.println("--- begin " + n);
            out.print(buf.toString(StandardCharsets.UTF_8));
            out.println();
            out.println("--- end " + n + " exit " + code);
            out.flush();
            n++;
        }
    }
}
